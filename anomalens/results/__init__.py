"""Results of inspection: the per-image record, a batch run and the folder it writes."""
