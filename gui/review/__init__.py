"""The Review page's parts: plain-Python viewer state and overlay maths, and the Qt widgets on them."""
