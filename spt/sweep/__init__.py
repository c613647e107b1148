"""spt.sweep"""
