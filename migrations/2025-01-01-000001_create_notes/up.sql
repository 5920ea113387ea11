CREATE TABLE notes (
    id INTEGER PRIMARY KEY NOT NULL,
    notebook_id INTEGER NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notes_by_notebook ON notes(notebook_id);
