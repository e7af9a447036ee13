"""User interfaces of supportbot: the command line and the Gradio pages."""
