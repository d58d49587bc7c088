"""The results folder: its format, how it is written, read and checked, and the runs derived from others."""
