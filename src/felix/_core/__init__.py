"""The sans-IO core: events, validation, the workflow state machine. No trio."""
