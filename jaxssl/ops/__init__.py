"""Custom operations with hand-written gradients (see conv.py for why)."""
