"""senior_intern.training"""
