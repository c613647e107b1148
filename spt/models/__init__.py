"""spt.models"""
