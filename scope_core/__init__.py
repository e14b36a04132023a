"""autoscope's sampler: targets, sites, priors, activation cache, generator, training, sampling, FCR.

Nothing in this package calls a judge LLM; `agent/` builds on its public API.
"""

__version__ = "0.1.0"
