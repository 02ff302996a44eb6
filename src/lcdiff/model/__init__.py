"""lcdiff.model"""
