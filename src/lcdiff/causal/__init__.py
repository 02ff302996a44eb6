"""lcdiff.causal"""
