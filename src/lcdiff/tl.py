"""Tools that act on a fitted model: CLIPR and its downstream analyses."""
