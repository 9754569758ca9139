"""Data-side modules: samplers, robust image reading, dataset converters."""
