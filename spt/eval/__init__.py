"""spt.eval"""
