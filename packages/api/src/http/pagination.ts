/**
 * The one shape of a cursor-paged answer: `{ <key>: [items], next_cursor }`, next_cursor null on
 * the last page. Every paged list route answers it, so clients page them all the same way.
 */
export function pagedResponseSchema<K extends string, S extends object>(key: K, itemSchema: S) {
  return {
    type: 'object',
    required: [key, 'next_cursor'],
    properties: {
      [key]: { type: 'array', items: itemSchema },
      next_cursor: {
        type: ['string', 'null'],
        description: 'Pass as cursor for the next page; null on the last page.',
      },
    },
  } as const;
}
