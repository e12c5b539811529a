"""Decoding: the step's equations (kernel), how its products are laid out on this machine (layout), the filtering
rule and seeded sampling (sampling), the one decode loop that steps many requests together (loop), interventions
that force a unit inside it, the Trace a run leaves, and the name of a unit (unit). Everything above builds on it;
it imports nothing of charrnn's but the vocabulary and the bounded cache."""
