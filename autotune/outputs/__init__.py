"""What a run leaves behind: the profile, the CSVs, the plots, and the summary printed on stdout."""
