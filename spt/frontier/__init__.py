"""spt.frontier"""
