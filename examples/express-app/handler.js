'use strict';
// An ordinary Express app with a router, exported instead of app.listen().
const express = require('express');

const app = express();
const notes = express.Router();
const saved = [];

notes.get('/', (req, res) => res.json({ notes: saved, self: `${req.baseUrl}/` }));
notes.post('/', express.json(), (req, res) => {
  saved.push(req.body.text);
  res.status(201).location(`${req.baseUrl}/${saved.length - 1}`).json({ id: saved.length - 1 });
});
notes.get('/:id', (req, res) => {
  const note = saved[Number(req.params.id)];
  if (note === undefined) return res.status(404).json({ error: 'no such note' });
  return res.json({ id: req.params.id, text: note, base: req.baseUrl });
});

app.use('/notes', notes);
app.get('/', (req, res) => res.redirect(`${req.baseUrl}/notes/`));

module.exports = app;
