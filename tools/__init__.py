"""Developer tools that live outside the product: test-image factory and JOSE helpers for the test suite."""
