import { firmaConfigJsonSchema } from '../../config/index.js';

/** `firma schema`: the JSON Schema of firma.toml, for editors. */
export function schemaCommand(): void {
  process.stdout.write(JSON.stringify(firmaConfigJsonSchema(), null, 2) + '\n');
}
