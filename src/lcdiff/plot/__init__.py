"""lcdiff.plot"""
