"""What the data looks like: the catalogue of data items, form definitions, and the marshmallow
schemas of every payload that crosses an edge."""
