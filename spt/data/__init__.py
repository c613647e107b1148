"""spt.data"""
