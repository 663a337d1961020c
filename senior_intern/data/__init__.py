"""senior_intern.data"""
