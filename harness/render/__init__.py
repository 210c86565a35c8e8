"""Renderers: they read results and reports, and never change them."""
