"""Analysis: what the units of a model do. One pass over a text gives every unit's values (activations); signals
are numbers per character to hold them against (signals); units are found and ordered by correlation (units); the
atlas keeps what every unit does over the model's reference text (atlas); LSTMVis's select and match (matching);
the gates in concrete contexts (contexts); the GRU against the bigram (memory_gain); two runs that differ in one
change (whatif). Each analysis is plain data over a model; long ones are also written as steps, one piece of work
per step, which the page runs in pieces (activations.run_steps runs them here)."""
