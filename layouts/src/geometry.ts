// Pure geometry of the two layouts: where each tile goes in a W x H window.

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** The aspect ratio assumed for tiles whose video size is not known (yet). */
export const DEFAULT_ASPECT = 16 / 9;

/** Gap between tiles, in CSS pixels: small, about 4 px at 1080p. */
export function gapFor(width: number, height: number): number {
  return Math.max(2, Math.round(Math.min(width, height) / 270));
}

/**
 * Columns and rows of a balanced grid for n tiles: 1 -> 1x1, 2 -> 2x1, 3-4 -> 2x2,
 * 5-6 -> 3x2, 7-9 -> 3x3, 10-12 -> 4x3, ... In a portrait window rows and columns swap.
 */
export function gridDims(n: number, width: number, height: number): { cols: number; rows: number } {
  if (n <= 0) return { cols: 0, rows: 0 };
  const major = Math.ceil(Math.sqrt(n));
  const minor = Math.ceil(n / major);
  return width >= height ? { cols: major, rows: minor } : { cols: minor, rows: major };
}

/** The cells of the grid, row by row; an incomplete last row is centred. */
export function gridCells(n: number, width: number, height: number): Rect[] {
  const { cols, rows } = gridDims(n, width, height);
  if (n <= 0) return [];
  const gap = gapFor(width, height);
  const cw = (width - gap * (cols - 1)) / cols;
  const ch = (height - gap * (rows - 1)) / rows;
  const cells: Rect[] = [];
  for (let i = 0; i < n; i++) {
    const row = Math.floor(i / cols);
    const col = i % cols;
    const inRow = row === rows - 1 ? n - row * cols : cols;
    const offset = ((cols - inRow) * (cw + gap)) / 2;
    cells.push({ x: offset + col * (cw + gap), y: row * (ch + gap), w: cw, h: ch });
  }
  return cells;
}

/**
 * Speaker layout: one large cell and a strip of small cells along the bottom for the
 * others. Without others the large cell is the whole window; with others it keeps 84% of
 * the height.
 */
export function speakerCells(others: number, width: number, height: number): { main: Rect; strip: Rect[] } {
  if (others <= 0) return { main: { x: 0, y: 0, w: width, h: height }, strip: [] };
  const gap = gapFor(width, height);
  const stripH = Math.round(height * 0.16);
  const main: Rect = { x: 0, y: 0, w: width, h: height - stripH - gap };
  let cw = stripH * DEFAULT_ASPECT;
  if (others * cw + (others - 1) * gap > width) {
    cw = (width - (others - 1) * gap) / others;
  }
  const total = others * cw + (others - 1) * gap;
  const x0 = (width - total) / 2;
  const strip: Rect[] = [];
  for (let i = 0; i < others; i++) {
    strip.push({ x: x0 + i * (cw + gap), y: height - stripH, w: cw, h: stripH });
  }
  return { main, strip };
}

/** The largest rectangle of the given aspect ratio centred in a cell, in whole pixels. */
export function contain(cell: Rect, aspect: number): Rect {
  const a = Number.isFinite(aspect) && aspect > 0 ? aspect : DEFAULT_ASPECT;
  let w = cell.w;
  let h = w / a;
  if (h > cell.h) {
    h = cell.h;
    w = h * a;
  }
  const x = Math.round(cell.x + (cell.w - w) / 2);
  const y = Math.round(cell.y + (cell.h - h) / 2);
  return { x, y, w: Math.round(cell.x + (cell.w + w) / 2) - x, h: Math.round(cell.y + (cell.h + h) / 2) - y };
}
