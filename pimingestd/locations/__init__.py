"""Where source files come from. ``local`` reads files on this machine; remote locations land here next."""
