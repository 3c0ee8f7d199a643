/**
 * The generated napi-rs binding (`index.js`/`index.d.ts` at the package root). Nothing outside
 * `ts/` should import it: the facade in `index.ts` is the public API.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
import binding = require('../index');

export = binding;
