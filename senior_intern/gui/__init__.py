"""senior_intern.gui"""
