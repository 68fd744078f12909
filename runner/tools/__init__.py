"""Tools an agent step may call: the built-in sandbox tools and (later) tenant HTTP connectors."""
