"""WeMcp goods service: products and plans for servers and agents, merchant and internal queries, announcements."""
