"""Test helpers: tiny params, real servers on 127.0.0.1, synthetic data, fake tar archives."""
