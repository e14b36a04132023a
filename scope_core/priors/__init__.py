"""Task priors: synthetic prompt generators with ground-truth labels."""
