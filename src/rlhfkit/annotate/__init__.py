"""The annotation app: a team writes gold answers, compares and ranks model answers; FastAPI + SQLAlchemy."""
