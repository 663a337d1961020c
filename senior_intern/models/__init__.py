"""senior_intern.models"""
