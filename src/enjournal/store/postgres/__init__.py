"""The Repository on PostgreSQL (psycopg 3 with a connection pool); see ``repository``."""
