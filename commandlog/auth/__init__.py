"""Who may do what: api tokens, WebSocket tickets, approval codes and tenant-bound SQL logins."""

