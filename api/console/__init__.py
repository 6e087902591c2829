"""The web console for the people who approve and operate: server-rendered pages under
``/console`` (inbox, approvals, runs), served by the API process itself."""
