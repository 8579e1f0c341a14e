"""Safety-critical scenarios scripted on the embedded simulator (library, placement, director)."""
