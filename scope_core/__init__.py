"""autoscope's sampler: targets, sites, priors, activation cache, generator, training, sampling, FCR.

Nothing in this package calls a judge LLM; `agent/`, `features/`, `serving/` and `bench/`
build on its public API, `scope_core.api`, and import no other module of it.
"""

__version__ = "0.1.0"
