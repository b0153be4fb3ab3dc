// Bubble Shooter: aim with the mouse (or a finger), click to shoot; three or
// more bubbles of one colour pop, and bubbles left hanging fall.
(() => {
  const COLORS = { R: '#ff5d6c', G: '#5ddc7a', B: '#4da3ff', Y: '#ffd24d', P: '#b978ff' };
  const canvas = document.getElementById('game');
  const ctx = canvas.getContext('2d');
  const R = 20, COLS = 12, ROW_H = R * Math.sqrt(3);
  const shooter = { x: canvas.width / 2, y: canvas.height - 30 };
  let grid = [], shot = null, next = 'R', aim = -Math.PI / 2, score = 0, level = null;

  const cellX = (row, col) => R + col * 2 * R + (row % 2 ? R : 0);
  const cellY = (row) => R + row * ROW_H;
  const colsIn = (row) => (row % 2 ? COLS - 1 : COLS);
  const colorsLeft = () => [...new Set(grid.flat().filter(Boolean))];

  async function loadLevel(name) {
    const response = await fetch(`levels/${encodeURIComponent(name)}.json`, { cache: 'no-store' });
    level = { id: name, ...(await response.json()) };
    grid = level.rows.map((row, r) => [...row.padEnd(colsIn(r), row)].slice(0, colsIn(r)));
    for (let r = grid.length; r < 14; r++) grid.push(Array(colsIn(r)).fill(null));
    score = 0;
    next = pick();
    document.getElementById('save').hidden = true;
    updateScore();
  }

  function pick() {
    const left = colorsLeft();
    return left.length ? left[Math.floor(Math.random() * left.length)] : 'R';
  }

  function neighbours(r, c) {
    const odd = r % 2;
    const deltas = [[0, -1], [0, 1], [-1, odd ? 0 : -1], [-1, odd ? 1 : 0], [1, odd ? 0 : -1], [1, odd ? 1 : 0]];
    return deltas.map(([dr, dc]) => [r + dr, c + dc]).filter(([nr, nc]) => grid[nr] && nc >= 0 && nc < colsIn(nr));
  }

  function flood(r, c, match) {
    const seen = new Set([`${r},${c}`]), stack = [[r, c]], found = [];
    while (stack.length) {
      const [cr, cc] = stack.pop();
      found.push([cr, cc]);
      for (const [nr, nc] of neighbours(cr, cc)) {
        const key = `${nr},${nc}`;
        if (!seen.has(key) && grid[nr][nc] && match(grid[nr][nc])) { seen.add(key); stack.push([nr, nc]); }
      }
    }
    return found;
  }

  function settle(r, c) {
    const group = flood(r, c, (color) => color === grid[r][c]);
    if (group.length < 3) return;
    group.forEach(([gr, gc]) => { grid[gr][gc] = null; });
    score += group.length * 10;
    const anchored = new Set();
    grid[0].forEach((color, col) => {
      if (color) flood(0, col, Boolean).forEach(([ar, ac]) => anchored.add(`${ar},${ac}`));
    });
    grid.forEach((row, rr) => row.forEach((color, cc) => {
      if (color && !anchored.has(`${rr},${cc}`)) { row[cc] = null; score += 20; }
    }));
    updateScore();
    if (!colorsLeft().length) document.getElementById('save').hidden = false;
  }

  function snap(x, y) {
    let best = null;
    grid.forEach((row, r) => row.forEach((color, c) => {
      if (color) return;
      const d = Math.hypot(cellX(r, c) - x, cellY(r) - y);
      if (!best || d < best.d) best = { r, c, d };
    }));
    return best;
  }

  function step() {
    if (shot) {
      for (let i = 0; i < 4; i++) {
        shot.x += shot.dx; shot.y += shot.dy;
        if (shot.x < R || shot.x > canvas.width - R) shot.dx *= -1;
        const hit = shot.y < R || grid.some((row, r) => row.some((color, c) => color && Math.hypot(cellX(r, c) - shot.x, cellY(r) - shot.y) < 2 * R - 2));
        if (hit) {
          const cell = snap(shot.x, shot.y);
          if (cell) { grid[cell.r][cell.c] = shot.color; settle(cell.r, cell.c); }
          shot = null; next = pick();
          break;
        }
      }
    }
    draw();
    requestAnimationFrame(step);
  }

  function bubble(x, y, color) {
    ctx.beginPath(); ctx.arc(x, y, R - 1, 0, Math.PI * 2);
    ctx.fillStyle = COLORS[color] || '#888'; ctx.fill();
    ctx.beginPath(); ctx.arc(x - 6, y - 6, 5, 0, Math.PI * 2);
    ctx.fillStyle = 'rgba(255,255,255,.35)'; ctx.fill();
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    grid.forEach((row, r) => row.forEach((color, c) => color && bubble(cellX(r, c), cellY(r), color)));
    ctx.strokeStyle = 'rgba(255,255,255,.3)'; ctx.setLineDash([6, 8]);
    ctx.beginPath(); ctx.moveTo(shooter.x, shooter.y);
    ctx.lineTo(shooter.x + Math.cos(aim) * 120, shooter.y + Math.sin(aim) * 120); ctx.stroke();
    ctx.setLineDash([]);
    bubble(shooter.x, shooter.y, next);
    if (shot) bubble(shot.x, shot.y, shot.color);
  }

  function updateScore() { document.getElementById('score').textContent = score; }

  function pointer(event) {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (canvas.height / rect.height);
    aim = Math.max(-Math.PI + 0.15, Math.min(-0.15, Math.atan2(y - shooter.y, x - shooter.x)));
  }

  canvas.addEventListener('pointermove', pointer);
  canvas.addEventListener('pointerdown', (event) => {
    pointer(event);
    if (!shot && colorsLeft().length) shot = { x: shooter.x, y: shooter.y, dx: Math.cos(aim) * 3, dy: Math.sin(aim) * 3, color: next };
  });

  async function showScores() {
    const list = document.getElementById('scores');
    const scores = await (await fetch('api/scores.php', { cache: 'no-store' })).json();
    list.replaceChildren(...scores.map((s) => {
      const item = document.createElement('li');
      item.textContent = `${s.name}: ${s.score} (${s.level})`;
      return item;
    }));
  }

  document.getElementById('save').addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = new URLSearchParams({ name: document.getElementById('name').value, score, level: level.id });
    await fetch('api/scores.php', { method: 'POST', body });
    document.getElementById('save').hidden = true;
    showScores();
  });

  const select = document.getElementById('level');
  select.addEventListener('change', () => loadLevel(select.value));
  if (select.value) loadLevel(select.value).then(() => requestAnimationFrame(step));
  showScores();
})();
