'use strict';
// hello-node: greets the `name` given in a JSON body.
//
//   plat invoke hello-node -d '{"name": "Ada"}'
//   -> {"message":"Hello, Ada!","node":"<the Node.js version>"}
//
// No npm packages needed: the handler is a module exporting an async function.

module.exports = async (event, context) => {
  const data = event.json;
  const name = data && typeof data === 'object' && data.name ? data.name : 'world';
  return { message: `Hello, ${name}!`, node: process.versions.node };
};
