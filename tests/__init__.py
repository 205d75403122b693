"""
Tests for wings_twisted.
"""
