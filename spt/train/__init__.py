"""spt.train"""
