"""lcdiff.eval"""
