"""taskhub's rag plugin: document indexes on disk (LanceDB), retrieval, and answers with citations."""
