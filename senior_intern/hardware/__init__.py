"""senior_intern.hardware"""
