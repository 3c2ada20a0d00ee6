"""One blueprint per service; ``common`` holds the endpoints every service has."""
