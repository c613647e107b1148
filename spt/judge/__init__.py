"""spt.judge"""
