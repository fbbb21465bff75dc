"""Pure rules of iacctl: statuses, stages, the transition table, slots, names. No I/O here."""
