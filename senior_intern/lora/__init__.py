"""senior_intern.lora"""
