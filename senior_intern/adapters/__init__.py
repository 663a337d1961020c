"""senior_intern.adapters"""
