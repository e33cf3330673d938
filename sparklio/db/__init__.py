"""The database: SQLite under SPARKLIO_HOME by default, PostgreSQL through DATABASE_URL."""
