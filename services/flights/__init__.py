"""Flight offers: places, dates, the provider port and its demo and Kiwi adapters."""
